-- ordered_members: heartbeat of one worker of an ordered queue; lists the live workers.
-- KEYS[1]: members zset (worker -> last heartbeat ms, server clock), under the queue's
-- own tag {name#o}.
-- ARGV: worker, ttl ms (silent longer: dead), '1' to leave instead.
-- Returns the live workers, sorted.
-- @flags allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
return members
