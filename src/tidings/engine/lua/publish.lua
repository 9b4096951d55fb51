-- publish: add messages to their lanes or the delayed set, with idempotency.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13..]: idempotency keys.
-- ARGV[1]: dedupe window ms; ARGV[2], ARGV[3]: the depth the lanes may reach with high or
--   normal messages, with low ones ('' = unbounded; see QueueConfig.max_depth).
--   Then per message, 7 values (see includes/admit.lua):
--   msg id, lane (0-2), envelope, expires_at ms or '', due_at ms (absolute) or '',
--   delay ms (relative to the server clock) or '', idempotency KEYS index (0 = none).
-- Returns per message the id that stands for it, and 1 if it was new, 0 if a duplicate;
-- or {-1, depth} when the new messages due now do not fit: then nothing was written.
-- No @flags: a full server refuses it before it writes anything (engine/scripts.py).
-- @include common
-- @include admit
local FIRST = 4  -- ARGV index of the first message

if ARGV[2] ~= '' then
  local depth = overflow(1, FIRST, #ARGV, tonumber(ARGV[2]), tonumber(ARGV[3]))
  if depth then return {-1, depth} end
end

local out = {}
admit(1, FIRST, #ARGV, ARGV[1], out)
return out
