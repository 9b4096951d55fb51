-- rate_limit_acquire: take up to n tokens from one token bucket.
-- KEYS[1]: bucket hash {t = tokens left, u = server time of t in microseconds}.
-- KEYS[2] (optional): run-time override hash {rate, burst}, same hash tag as KEYS[1];
--   when present its rate and burst replace ARGV's, so a change applies to the next call.
-- ARGV[1]: rate (tokens per second), ARGV[2]: burst (bucket size), ARGV[3]: n wanted.
-- Returns {granted, seconds until the next whole token (string: replies truncate numbers)}.
-- A missing bucket is a full one: keys expire only once they would have refilled anyway.
-- @flags allow-oom
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if KEYS[2] then
  local o = redis.call('HMGET', KEYS[2], 'rate', 'burst')
  if tonumber(o[1]) and tonumber(o[2]) then rate, burst = tonumber(o[1]), tonumber(o[2]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens, stamp = burst, now
end
-- A burst lowered at run time caps what the bucket holds at once.
tokens = math.min(burst, tokens)
-- A server clock that stepped back refills nothing rather than draining the bucket.
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate / 1000000)
  stamp = now
end

local granted = math.min(n, math.floor(tokens))
tokens = tokens - granted

local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate end

local full_in_ms = math.ceil((burst - tokens) / rate * 1000)
if full_in_ms <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 't', tokens, 'u', stamp)
  redis.call('PEXPIRE', KEYS[1], full_in_ms)
end
return {granted, tostring(wait)}
