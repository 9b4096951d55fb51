-- concurrency_renew: extend the leases of slots still held.
-- KEYS[1]: slots zset (holder token -> lease expiry, server ms).
-- ARGV[1]: lease ms, ARGV[2..]: holder tokens.
-- Returns the tokens that were no longer held (expired or released): those are lost, and
-- their slots may already belong to someone else.
-- @flags allow-oom
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return lost
