-- Admitting messages to one queue's lanes or delayed set, with idempotency and the depth
-- limit: shared by publish.lua (one queue) and route.lua (several in one call). Needs
-- common.lua first (its helpers write to the queue use_queue() points them at).
-- A queue's messages are ARGV[first..last], 7 values each:
--   msg id, lane (0-2), envelope, expires_at ms or '', due_at ms (absolute) or '',
--   delay ms (relative to the server clock) or '', idempotency key index (0 = none;
--   else the key is KEYS[kbase + index - 1]).
local now = nil  -- read only for a delayed message: TIME is one more call (~3 us) per publish

local function due_of(due_at, delay)
  if due_at == '' and delay == '' then return nil end
  now = now or now_ms()
  if delay ~= '' then return now + tonumber(delay) end
  return tonumber(due_at)
end

-- The lanes' depth (queued and in flight, and held in fair tenant lines) if the new
-- messages due now would take it past its limit; false if they fit. Duplicates and delayed
-- messages do not count: they add nothing to the lanes now.
local function overflow(kbase, first, last, limit_other, limit_low)
  local adds, adds_low = 0, 0
  for i = first, last, 7 do
    local idem, due = tonumber(ARGV[i + 6]), due_of(ARGV[i + 4], ARGV[i + 5])
    if (due == nil or due <= now)
        and (idem == 0 or redis.call('EXISTS', KEYS[kbase + idem - 1]) == 0) then
      adds = adds + 1
      if ARGV[i + 1] == '2' then adds_low = adds_low + 1 end
    end
  end
  if adds == 0 then return false end
  local depth = redis.call('XLEN', LANES[1]) + redis.call('XLEN', LANES[2])
    + redis.call('XLEN', LANES[3]) + tonumber(redis.call('HGET', STATS, 'fair_held') or '0')
  if depth + adds > limit_other or (adds_low > 0 and depth + adds > limit_low) then
    return depth
  end
  return false
end

-- Write the messages; appends {id that stands for it, 1 new | 0 duplicate} to out, counts
-- the new ones in the queue's stats and returns how many there were.
local function admit(kbase, first, last, dedupe_ms, out)
  local added = 0
  for i = first, last, 7 do
    local msg_id, lane, envelope = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local expires, idem = ARGV[i + 3], tonumber(ARGV[i + 6])
    local existing = false
    if idem > 0 then
      -- One call: set the key if absent, and get the id already there if not.
      existing = redis.call('SET', KEYS[kbase + idem - 1], msg_id, 'PX', dedupe_ms, 'NX', 'GET')
    end
    if existing then
      out[#out + 1] = {existing, 0}
    else
      local due = due_of(ARGV[i + 4], ARGV[i + 5])
      if due ~= nil and due > now then
        schedule(lane, msg_id, envelope, expires, due)
      else
        add_to_lane(lane, msg_id, envelope, expires)
      end
      added = added + 1
      out[#out + 1] = {msg_id, 1}
    end
  end
  if added > 0 then redis.call('HINCRBY', STATS, 'published', added) end
  return added
end
