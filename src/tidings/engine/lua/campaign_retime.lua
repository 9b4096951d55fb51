-- campaign_retime: move the due times of a scheduled campaign's messages not released yet
-- (Campaigns.update: a new throttle rate, or a new send time before anything was released).
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset; KEYS[15]: held zset (used instead of the delayed set while paused).
-- ARGV[1]: 'shift' (every due time + ARGV[2] ms; refused once any message was released) or
-- 'space' (the i-th waiting message, in due order, due at ARGV[3] + floor(i * ARGV[2]) ms:
-- the throttle's even spacing at a new rate from the anchor ARGV[3]);
-- ARGV[4]: the campaign's new spec JSON.
-- Expiry times move with the due times. Messages found released are counted (as
-- campaign_sweep.lua does). Returns {messages moved}; {-1} unknown campaign;
-- {-2, status} not 'scheduled'; {-3} a 'shift' after a message was released.
-- @flags allow-oom
-- @include common
local CAMPAIGN, PENDING, HELD = KEYS[13], KEYS[14], KEYS[15]
if redis.call('EXISTS', CAMPAIGN) == 0 then return {-1} end
local status = redis.call('HGET', CAMPAIGN, 'status')
if status ~= 'scheduled' then return {-2, status} end
local paused = (redis.call('HGET', CAMPAIGN, 'paused_at') or '') ~= ''
local mode, amount, anchor = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local source = PENDING
if paused then source = HELD end
local items = redis.call('ZRANGE', source, 0, -1, 'WITHSCORES')
local waiting, released = {}, {}
for i = 1, #items, 2 do
  local msg_id, due = items[i], tonumber(items[i + 1])
  local s = nil
  if not paused then s = redis.call('ZSCORE', DELAYED, msg_id) end
  if paused or (s and tonumber(s) == due) then
    waiting[#waiting + 1] = {msg_id, due}
  else
    released[#released + 1] = msg_id
  end
end
if mode == 'shift' and (#released > 0 or tonumber(redis.call('HGET', CAMPAIGN, 'released')) > 0)
then return {-3} end
for _, msg_id in ipairs(released) do redis.call('ZREM', PENDING, msg_id) end
if #released > 0 then redis.call('HINCRBY', CAMPAIGN, 'released', #released) end
for i, item in ipairs(waiting) do
  local msg_id, due = item[1], item[2]
  local new_due = due + amount
  if mode == 'space' then new_due = anchor + math.floor((i - 1) * amount) end
  local moved = new_due - due
  local body = redis.call('HGET', BODIES, msg_id)
  if body and moved ~= 0 then
    local lane, expires, envelope = string.match(body, '^([^|]*)|([^|]*)|(.*)$')
    if expires ~= '' then expires = string.format('%d', tonumber(expires) + moved) end
    redis.call('HSET', BODIES, msg_id, lane .. '|' .. expires .. '|' .. envelope)
  end
  redis.call('ZADD', source, new_due, msg_id)
  if not paused then redis.call('ZADD', DELAYED, new_due, msg_id) end
end
redis.call('HSET', CAMPAIGN, 'spec', ARGV[4])
if #waiting > 0 and not paused then redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1') end
return {#waiting}
