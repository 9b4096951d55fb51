-- Shared by every queue script (inlined by the loader at "-- @include common").
-- Every queue script receives the same twelve KEYS, all under one hash tag:
--   KEYS[1..3] lane streams (high, normal, low)   KEYS[4]  delayed zset (msg id -> due ms)
--   KEYS[5]    delayed bodies hash                 KEYS[6]  dead-letter stream
--   KEYS[7]    deliveries hash (lane..entry id -> delivery count; the lease token)
--   KEYS[8]    index hash (msg id -> where it is)  KEYS[9]  stats hash
--   KEYS[10]   wake stream                         KEYS[11] consumers zset (name -> heartbeat)
--   KEYS[12]   config hash
local LANES = {KEYS[1], KEYS[2], KEYS[3]}
local DELAYED, BODIES, DLQ = KEYS[4], KEYS[5], KEYS[6]
local DELIVERIES, INDEX, STATS = KEYS[7], KEYS[8], KEYS[9]
local WAKE, CONSUMERS, CONFIG = KEYS[10], KEYS[11], KEYS[12]

-- Point every helper below at the queue whose twelve keys start at KEYS[base] (route.lua
-- writes to several queues in one call; the other scripts keep base 1).
local function use_queue(base)
  LANES = {KEYS[base], KEYS[base + 1], KEYS[base + 2]}
  DELAYED, BODIES, DLQ = KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
  DELIVERIES, INDEX, STATS = KEYS[base + 6], KEYS[base + 7], KEYS[base + 8]
  WAKE, CONSUMERS, CONFIG = KEYS[base + 9], KEYS[base + 10], KEYS[base + 11]
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Flat field list {f1, v1, f2, v2} of a stream entry -> table.
local function fields_of(flat)
  local out = {}
  if flat then
    for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  end
  return out
end

-- Append a message to lane (0-based); returns the new entry id.
local function add_to_lane(lane, msg_id, envelope, expires)
  local sid
  if expires ~= nil and expires ~= '' then
    sid = redis.call('XADD', LANES[lane + 1], '*', 'i', msg_id, 'm', envelope, 'x', expires)
  else
    sid = redis.call('XADD', LANES[lane + 1], '*', 'i', msg_id, 'm', envelope)
  end
  redis.call('HSET', INDEX, msg_id, lane .. ':' .. sid)
  return sid
end

-- Park a message in the delayed set until due_ms. Wakes blocked workers when it becomes the
-- earliest due message, so they re-arm their wait for it instead of sleeping past it.
local function schedule(lane, msg_id, envelope, expires, due_ms)
  local head = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
  redis.call('HSET', BODIES, msg_id, lane .. '|' .. (expires or '') .. '|' .. envelope)
  redis.call('ZADD', DELAYED, due_ms, msg_id)
  redis.call('HSET', INDEX, msg_id, 'd')
  if head[2] == nil or tonumber(head[2]) > due_ms then
    redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1')
  end
end

-- Remove a settled entry from its lane: ack, delete (streams never trimmed by MAXLEN), and
-- drop its delivery counter.
local function remove_entry(group, lane, sid)
  redis.call('XACK', LANES[lane + 1], group, sid)
  redis.call('XDEL', LANES[lane + 1], sid)
  redis.call('HDEL', DELIVERIES, lane .. sid)
end

-- Move an entry to the dead-letter stream, keeping all its original fields, with how many
-- times it was delivered (its delivery counter goes with the entry; ``delivered`` when the
-- counter already counts a delivery that did not happen).
local function dead_letter_entry(group, lane, sid, flat, reason, err, now, delivered)
  local args = {'XADD', DLQ, '*'}
  if flat then
    for i = 1, #flat do args[#args + 1] = flat[i] end
  end
  delivered = delivered or redis.call('HGET', DELIVERIES, lane .. sid) or '0'
  for _, v in ipairs({'reason', reason, 'error', err, 'lane', tostring(lane),
                      'dead_at', tostring(now), 'deliveries', tostring(delivered)}) do
    args[#args + 1] = v
  end
  local dsid = redis.call(unpack(args))
  remove_entry(group, lane, sid)
  local f = fields_of(flat)
  if f['i'] then redis.call('HSET', INDEX, f['i'], 'x:' .. dsid) end
  redis.call('HINCRBY', STATS, 'dead_lettered', 1)
  return dsid
end

-- Park what is not a stream entry (a malformed delayed body) in the dead-letter stream.
local function dead_letter_raw(msg_id, raw, reason, err, now)
  local dsid = redis.call('XADD', DLQ, '*', 'i', msg_id, 'm', raw, 'reason', reason,
    'error', err, 'lane', '1', 'dead_at', tostring(now))
  redis.call('HSET', INDEX, msg_id, 'x:' .. dsid)
  redis.call('HINCRBY', STATS, 'dead_lettered', 1)
  return dsid
end

-- Count a delivery of each entry and sort it: deliver, expire, or (past max_deliveries) poison.
-- Appends {lane, sid, token, envelope, msg_id} to out; expired/poison ids to dropped.
local function deliver_entries(group, lane, entries, now, max_deliveries, on_expire, out, dropped)
  for _, entry in ipairs(entries) do
    local sid, flat = entry[1], entry[2]
    local token = redis.call('HINCRBY', DELIVERIES, lane .. sid, 1)
    local f = fields_of(flat)
    if f['x'] and tonumber(f['x']) and tonumber(f['x']) <= now then
      if on_expire == 'drop' then
        remove_entry(group, lane, sid)
        if f['i'] then redis.call('HDEL', INDEX, f['i']) end
        redis.call('HINCRBY', STATS, 'expired_dropped', 1)
      else
        dead_letter_entry(group, lane, sid, flat, 'expired', '', now, token - 1)
        redis.call('HINCRBY', STATS, 'expired_dead_lettered', 1)
      end
      dropped[#dropped + 1] = {'expired', f['i'] or '', lane, f['m'] or ''}
    elseif max_deliveries > 0 and token > max_deliveries then
      dead_letter_entry(group, lane, sid, flat, 'poison',
        'delivered ' .. (token - 1) .. ' times without being settled', now, token - 1)
      redis.call('HINCRBY', STATS, 'poison', 1)
      dropped[#dropped + 1] = {'poison', f['i'] or '', lane, f['m'] or ''}
    else
      out[#out + 1] = {lane, sid, token, f['m'] or '', f['i'] or ''}
    end
  end
end
