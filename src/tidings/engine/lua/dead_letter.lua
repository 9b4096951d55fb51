-- dead_letter: move delivered messages to the dead-letter stream with the reason and error,
-- only where the caller still holds the lease.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, then per message: lane, entry id, token, reason, error (JSON text).
-- Returns the 1-based indexes of refused settles (lease lost).
-- @flags allow-oom
-- @include common
local group = ARGV[1]
local now = now_ms()
local refused = {}
local n = 0
for i = 2, #ARGV, 5 do
  n = n + 1
  local lane, sid, token = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  if redis.call('HGET', DELIVERIES, lane .. sid) == token then
    local entry = redis.call('XRANGE', LANES[lane + 1], sid, sid)
    dead_letter_entry(group, lane, sid, entry[1] and entry[1][2], ARGV[i + 3], ARGV[i + 4], now)
  else
    refused[#refused + 1] = n
  end
end
return refused
