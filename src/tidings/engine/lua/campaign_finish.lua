-- campaign_finish: mark a campaign fully scheduled once its last chunk is in.
-- KEYS[1]: the campaign hash. ARGV: the final cursor, now ms.
-- Returns 1 if marked, 0 if it is not scheduling any more (cancelled) or the cursor differs.
-- @flags allow-oom
local C = KEYS[1]
if redis.call('HGET', C, 'status') ~= 'scheduling' then return 0 end
if redis.call('HGET', C, 'cursor') ~= ARGV[1] then return 0 end
redis.call('HSET', C, 'status', 'scheduled', 'finished_at', ARGV[2])
return 1
