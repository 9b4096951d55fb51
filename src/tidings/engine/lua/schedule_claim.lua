-- schedule_claim: claim due recurring schedules for one tick, so that two tickers never fire
-- the same occurrence.
-- KEYS[1]: due zset (schedule id -> next fire ms); KEYS[2..]: the candidates' hashes.
-- ARGV: bound ms (claim entries due at or before it), lease end ms, claim token, then the
--       candidate ids (ARGV[4..], in the order of KEYS[2..]).
-- A claim moves the entry's score to the lease end instead of removing it: if the ticker dies
-- before it commits, another ticker claims the schedule again once the lease is over and
-- enqueues the same occurrences, which their idempotency keys collapse into one message each.
-- Returns {id, flat hash fields} per schedule claimed.
-- @flags allow-oom
local bound, lease_end, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i = 2, #KEYS do
  local id = ARGV[i + 2]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= bound then
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('ZADD', KEYS[1], lease_end, id)
      redis.call('HSET', KEYS[i], 'claim', token)
      out[#out + 1] = {id, redis.call('HGETALL', KEYS[i])}
    else
      redis.call('ZREM', KEYS[1], id)  -- a stray entry whose schedule is gone
    end
  end
end
return out
