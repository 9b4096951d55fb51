-- extend: heartbeat of one consumer; renews the leases it still owns.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, consumer, then per in-flight message: lane, entry id, token.
-- A lease is owned while the delivery counter still equals the token handed out with it;
-- a reclaim (or a settle) changes or removes it.
-- Returns {indexes (1-based, in ARGV order) of leases lost, config hash as a flat list}.
-- @flags allow-oom
-- @include common
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZADD', CONSUMERS, now_ms(), consumer)
local lost = {}
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local lane, sid, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HGET', DELIVERIES, lane .. sid) == token then
    -- XCLAIM to ourselves with min-idle 0 resets the idle time: the lease renewal.
    redis.call('XCLAIM', LANES[tonumber(lane) + 1], group, consumer, 0, sid, 'JUSTID')
  else
    lost[#lost + 1] = n
  end
end
return {lost, redis.call('HGETALL', CONFIG)}
