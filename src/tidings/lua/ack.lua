-- ack: settle processed messages, only where the caller still holds the lease.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, then per message: lane, entry id, token, msg id.
-- Returns the 1-based indexes of refused acks (lease lost: reclaimed or already settled).
-- @include common
local group = ARGV[1]
local refused = {}
local per_lane = {0, 0, 0}
local n = 0
for i = 2, #ARGV, 4 do
  n = n + 1
  local lane, sid, token, msg_id = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('HGET', DELIVERIES, lane .. sid) == token then
    remove_entry(group, lane, sid)
    redis.call('HDEL', INDEX, msg_id)
    per_lane[lane + 1] = per_lane[lane + 1] + 1
  else
    refused[#refused + 1] = n
  end
end
for lane = 1, 3 do
  if per_lane[lane] > 0 then redis.call('HINCRBY', STATS, 'acked:' .. (lane - 1), per_lane[lane]) end
end
return refused
