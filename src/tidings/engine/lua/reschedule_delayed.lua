-- reschedule_delayed: move the due time of a message that waits in the delayed set.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: msg id, due_at ms (absolute) or '', delay ms (relative to the server clock) or ''.
-- Returns the new due time in ms, or -1 if the message was not in the delayed set.
-- @flags allow-oom
-- @include common
local msg_id = ARGV[1]
if not redis.call('ZSCORE', DELAYED, msg_id) then return -1 end
local due = now_ms()
if ARGV[2] ~= '' then due = tonumber(ARGV[2]) end
if ARGV[3] ~= '' then due = due + tonumber(ARGV[3]) end
redis.call('ZADD', DELAYED, 'XX', due, msg_id)
redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1')
return due
