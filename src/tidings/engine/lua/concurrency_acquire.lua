-- concurrency_acquire: take up to n slots of a fleet-wide concurrency cap.
-- KEYS[1]: slots zset (holder token -> lease expiry, server ms).
-- ARGV[1]: limit, ARGV[2]: lease ms, ARGV[3..]: candidate tokens, one per slot wanted.
-- Returns the tokens granted: the first min(n, limit - live holders) candidates.
-- @flags allow-oom
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Holders whose lease ran out (a dead or stalled worker) give their slots back here.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = limit - redis.call('ZCARD', KEYS[1])
local granted = {}
for i = 3, math.min(#ARGV, 2 + free) do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  granted[#granted + 1] = ARGV[i]
end
-- The key outlives its longest lease by nothing, so abandoned names cost no memory.
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return granted
