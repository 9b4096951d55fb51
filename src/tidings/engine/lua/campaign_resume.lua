-- campaign_resume: put a paused campaign's held messages back in the delayed set, every due
-- time (and expiry) moved later by the length of the pause, so the throttle's spacing is
-- kept from where it stopped instead of releasing at once everything the pause held up.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset; KEYS[15]: held zset (msg id -> the due ms it had).
-- ARGV[1]: now ms (the resume instant; the shift is now - paused_at, never negative).
-- Returns {messages back in the delayed set, shift ms}; {0, 0} when not paused;
-- {-1, 0} for an unknown campaign.
-- @flags allow-oom
-- @include common
local CAMPAIGN, PENDING, HELD = KEYS[13], KEYS[14], KEYS[15]
if redis.call('EXISTS', CAMPAIGN) == 0 then return {-1, 0} end
local paused_at = redis.call('HGET', CAMPAIGN, 'paused_at') or ''
if paused_at == '' then return {0, 0} end
local shift = math.max(0, tonumber(ARGV[1]) - tonumber(paused_at))
local items = redis.call('ZRANGE', HELD, 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  local msg_id, due = items[i], tonumber(items[i + 1]) + shift
  local body = redis.call('HGET', BODIES, msg_id)
  if body then
    local lane, expires, envelope = string.match(body, '^([^|]*)|([^|]*)|(.*)$')
    if expires ~= '' then expires = string.format('%d', tonumber(expires) + shift) end
    redis.call('HSET', BODIES, msg_id, lane .. '|' .. expires .. '|' .. envelope)
    redis.call('ZADD', DELAYED, due, msg_id)
    redis.call('ZADD', PENDING, due, msg_id)
  end
end
redis.call('DEL', HELD)
redis.call('HSET', CAMPAIGN, 'paused_at', '', 'resumed_at', ARGV[1])
if #items > 0 then redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1') end
return {#items / 2, shift}
