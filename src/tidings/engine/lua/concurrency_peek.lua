-- concurrency_peek: how many slots of a fleet-wide concurrency cap are held right now.
-- KEYS[1]: slots zset (holder token -> lease expiry, server ms).
-- Returns the number of live holders (expired leases are dropped first).
-- @flags allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
