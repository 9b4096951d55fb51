-- breaker_record: count the outcome of one call and move the breaker if that trips it.
-- KEYS[1]: breaker hash {s = state (absent: closed), o = opened at ms, p = probes in flight,
--          k = successful probes, d = probe deadline ms, c:<bucket> / f:<bucket> = calls /
--          failures in that window bucket}.
-- ARGV[1]: now ms (the caller's injectable clock), ARGV[2]: 1 success / 0 failure,
-- ARGV[3]: bucket ms, ARGV[4]: buckets per window, ARGV[5]: failure threshold (0: unused),
-- ARGV[6]: failure rate 0..1 (negative: unused), ARGV[7]: min calls for the rate,
-- ARGV[8]: half-open probes, ARGV[9]: idle ttl ms of a closed breaker.
-- Returns {from, to} on a state change, else {}.
-- @flags allow-oom
local key = KEYS[1]
local now, ok = tonumber(ARGV[1]), ARGV[2] == '1'
local bucket_ms, buckets = tonumber(ARGV[3]), tonumber(ARGV[4])
local threshold, rate, min_calls = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local probes_wanted, idle_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])

local state = redis.call('HGET', key, 's') or 'closed'

if state == 'open' then
  -- A call let through before the breaker opened, finishing late: it says nothing new.
  return {}
end

if state == 'half_open' then
  local p = tonumber(redis.call('HGET', key, 'p')) or 0
  -- No probe in flight: this is a straggler from before the breaker opened, not a probe.
  if p <= 0 then return {} end
  if not ok then
    redis.call('HSET', key, 's', 'open', 'o', now, 'p', 0, 'k', 0)
    redis.call('HDEL', key, 'd')
    return {'half_open', 'open'}
  end
  local k = redis.call('HINCRBY', key, 'k', 1)
  redis.call('HINCRBY', key, 'p', -1)
  if k >= probes_wanted then
    -- Closed with an empty window: failures from before the outage must not reopen it.
    redis.call('DEL', key)
    return {'half_open', 'closed'}
  end
  return {}
end

local current = math.floor(now / bucket_ms)
local oldest = current - buckets + 1
redis.call('HINCRBY', key, 'c:' .. current, 1)
if not ok then redis.call('HINCRBY', key, 'f:' .. current, 1) end

local calls, failures = 0, 0
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local kind, index = string.match(flat[i], '^([cf]):(-?%d+)$')
  if kind then
    if tonumber(index) < oldest then
      redis.call('HDEL', key, flat[i])
    elseif kind == 'c' then
      calls = calls + tonumber(flat[i + 1])
    else
      failures = failures + tonumber(flat[i + 1])
    end
  end
end

if not ok then
  local trip = threshold > 0 and failures >= threshold
  if rate >= 0 and calls >= min_calls and failures >= rate * calls then trip = true end
  if trip then
    redis.call('HSET', key, 's', 'open', 'o', now, 'p', 0, 'k', 0)
    -- An open breaker must not vanish before someone probes the downstream again.
    redis.call('PERSIST', key)
    return {'closed', 'open'}
  end
end
-- Once idle for a whole window every bucket is stale: the key may as well go.
redis.call('PEXPIRE', key, idle_ttl)
return {}
