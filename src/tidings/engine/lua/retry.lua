-- retry: settle delivered messages by parking them in the delayed set for another attempt
-- (also used to snooze and to hand back unfinished work at shutdown, with delay 0).
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, stats field ('retried' | 'snoozed' | 'released'), then per message:
--   lane, entry id, token, msg id, new envelope, expires ms or '', delay ms (server clock).
-- Returns the 1-based indexes of refused settles (lease lost).
-- @flags allow-oom
-- @include common
local group, stat = ARGV[1], ARGV[2]
local now = now_ms()
local refused = {}
local done = 0
local n = 0
for i = 3, #ARGV, 7 do
  n = n + 1
  local lane, sid, token, msg_id = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HGET', DELIVERIES, lane .. sid) == token then
    remove_entry(group, lane, sid)
    schedule(lane, msg_id, ARGV[i + 4], ARGV[i + 5], now + tonumber(ARGV[i + 6]))
    done = done + 1
  else
    refused[#refused + 1] = n
  end
end
if done > 0 then redis.call('HINCRBY', STATS, stat, done) end
return refused
