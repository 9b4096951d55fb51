-- breaker_reset: force a breaker closed, forgetting its window.
-- KEYS[1]: breaker hash (fields as in breaker_record.lua).
-- Returns the state it was in.
-- @flags allow-oom
local state = redis.call('HGET', KEYS[1], 's') or 'closed'
redis.call('DEL', KEYS[1])
return state
