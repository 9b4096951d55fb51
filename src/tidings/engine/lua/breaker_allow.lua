-- breaker_allow: may a call go through? Grants half-open probe slots atomically.
-- KEYS[1]: breaker hash (fields as in breaker_record.lua).
-- ARGV[1]: now ms (the caller's injectable clock), ARGV[2]: open for ms,
-- ARGV[3]: half-open probes, ARGV[4]: probe timeout ms.
-- Returns {allowed 1/0, state after, retry after ms, from state or '', to state or ''}.
-- @flags allow-oom
local key = KEYS[1]
local now, open_for = tonumber(ARGV[1]), tonumber(ARGV[2])
local probes_wanted, probe_timeout = tonumber(ARGV[3]), tonumber(ARGV[4])

local state = redis.call('HGET', key, 's')
if not state or state == 'closed' then return {1, 'closed', 0, '', ''} end

local from = ''
if state == 'open' then
  local due = (tonumber(redis.call('HGET', key, 'o')) or 0) + open_for
  if now < due then return {0, 'open', due - now, '', ''} end
  redis.call('HSET', key, 's', 'half_open', 'p', 0, 'k', 0)
  redis.call('HDEL', key, 'd')
  from = 'open'
end

local got = redis.call('HMGET', key, 'p', 'k', 'd')
local p, k, deadline = tonumber(got[1]) or 0, tonumber(got[2]) or 0, tonumber(got[3])
-- A probe unanswered by its deadline died with its worker; its slot is handed out again.
if p > 0 and deadline and now >= deadline then p = 0 end
local to = ''
if from ~= '' then to = 'half_open' end
if p + k < probes_wanted then
  redis.call('HSET', key, 'p', p + 1, 'd', now + probe_timeout)
  return {1, 'half_open', 0, from, to}
end
local wait = probe_timeout
if deadline and deadline > now then wait = deadline - now end
return {0, 'half_open', wait, from, to}
