-- ordered_claim: take a partition, or renew its lease.
-- KEYS[1..8]: the partition keys (see includes/ordered.lua).
-- ARGV: worker, epoch held ('' to claim), lease ms.
-- Renewing (worker and epoch match) extends the lease and returns the epoch. Claiming
-- succeeds when the partition is free, its lease ran out, or the worker itself holds it
-- under a lost epoch: the epoch goes up (fencing the previous owner) and every head the
-- previous owner had in flight becomes ready again. Returns the new epoch, or 0 when
-- another worker holds a live lease.
-- @flags allow-oom
-- @include ordered
local worker, held, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local o = redis.call('HMGET', OWNER, 'w', 'e', 'x')
local w, e, x = o[1] or '', tonumber(o[2]) or 0, tonumber(o[3]) or 0
if w == worker and tostring(e) == held then
  redis.call('HSET', OWNER, 'x', now + lease)
  return e
end
if w ~= '' and w ~= worker and x > now then return 0 end
e = e + 1
redis.call('HSET', OWNER, 'w', worker, 'e', e, 'x', now + lease)
requeue_active()
return e
