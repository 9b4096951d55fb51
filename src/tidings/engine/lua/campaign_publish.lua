-- campaign_publish: one chunk of a campaign, atomically: its messages (as publish.lua does,
-- idempotency keys included), the campaign's set of messages still waiting for release, its
-- counters and its resume cursor. So a producer that crashes mid-campaign leaves whole
-- chunks only, and a cancel (campaign_cancel.lua) can always find every waiting message.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset (msg id -> due ms, exactly the score it got in the delayed set);
-- KEYS[15]: throttle slots hash (minute -> messages due in it);
-- KEYS[16..]: the idempotency key of each message, in message order.
-- ARGV[1] dedupe window ms, ARGV[2] cursor before this chunk (recipients consumed),
-- ARGV[3] cursor after it, ARGV[4] id of its last recipient, ARGV[5] recipients skipped,
-- ARGV[6] lane (0-2), ARGV[7] time to live after the due time in ms or '' (none),
-- ARGV[8] throttle slot updates: msgpack
-- array {minute, count, ...} or '', ARGV[9] the messages: msgpack array
-- {msg id, envelope, due ms, ...}. (Two packed arguments instead of thousands keep the
-- client's command encoding off the critical path at a million recipients.)
-- Returns {1, added, duplicates, flags} with flags a string of '1' (new) / '0' (duplicate)
-- per message; {0} if the campaign is no longer scheduling (cancelled, or already done);
-- {-1, cursor} if the cursor moved (another run of the same campaign got there first).
-- @include common
local CAMPAIGN, PENDING, SLOTS = KEYS[13], KEYS[14], KEYS[15]
if redis.call('HGET', CAMPAIGN, 'status') ~= 'scheduling' then return {0} end
local cursor = redis.call('HGET', CAMPAIGN, 'cursor')
if cursor ~= ARGV[2] then return {-1, cursor} end
local dedupe_ms, lane, ttl = ARGV[1], tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
if ARGV[8] ~= '' then
  local slots = cmsgpack.unpack(ARGV[8])
  for i = 1, #slots, 2 do redis.call('HSET', SLOTS, slots[i], slots[i + 1]) end
end
local msgs = cmsgpack.unpack(ARGV[9])
-- The delayed set is written as common.lua's schedule() does (body 'lane|expires|envelope',
-- index 'd'), but with one variadic call per structure per chunk instead of four calls per
-- message: script calls, not data, dominate the cost at a million recipients.
local head = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
local bodies, delayed, index, pending = {}, {}, {}, {}
local earliest = nil
local added, dups, released = 0, 0, 0
local flags = {}
for i = 1, #msgs, 3 do
  local msg_id, envelope, due = msgs[i], msgs[i + 1], tonumber(msgs[i + 2])
  local expires = ''
  if ttl then expires = string.format('%d', due + ttl) end
  if redis.call('SET', KEYS[15 + (i + 2) / 3], msg_id, 'PX', dedupe_ms, 'NX') then
    if due > now then
      bodies[#bodies + 1] = msg_id
      bodies[#bodies + 1] = lane .. '|' .. expires .. '|' .. envelope
      delayed[#delayed + 1] = due
      delayed[#delayed + 1] = msg_id
      index[#index + 1] = msg_id
      index[#index + 1] = 'd'
      if earliest == nil or due < earliest then earliest = due end
    else
      add_to_lane(lane, msg_id, envelope, expires)  -- already due: released right away
      released = released + 1
    end
    added = added + 1
    flags[#flags + 1] = '1'
  else
    dups = dups + 1
    flags[#flags + 1] = '0'
  end
end
-- Lua's unpack is limited to a few thousand values: write in slices.
local function variadic(cmd, key, values)
  for i = 1, #values, 2000 do
    redis.call(cmd, key, unpack(values, i, math.min(i + 1999, #values)))
  end
end
if #delayed > 0 then
  variadic('HSET', BODIES, bodies)
  variadic('ZADD', DELAYED, delayed)
  variadic('HSET', INDEX, index)
  variadic('ZADD', PENDING, delayed)
  -- Wake blocked workers when this chunk holds the new earliest due time (see schedule()).
  if head[2] == nil or tonumber(head[2]) > earliest then
    redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1')
  end
end
if added > 0 then
  redis.call('HINCRBY', STATS, 'published', added)
  redis.call('HINCRBY', CAMPAIGN, 'scheduled', added)
end
if released > 0 then redis.call('HINCRBY', CAMPAIGN, 'released', released) end
if dups > 0 then redis.call('HINCRBY', CAMPAIGN, 'duplicates', dups) end
if tonumber(ARGV[5]) > 0 then redis.call('HINCRBY', CAMPAIGN, 'skipped', ARGV[5]) end
redis.call('HSET', CAMPAIGN, 'cursor', ARGV[3], 'cursor_id', ARGV[4])
return {1, added, dups, table.concat(flags)}
