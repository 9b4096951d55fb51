-- campaign_create: the record of a campaign, created once; later calls return it unchanged.
-- KEYS[1]: the campaign hash. ARGV: id, queue, spec JSON, reference ms, created ms.
-- Returns {1} when created, else {0, flat hash fields} for the caller to compare and resume.
local C = KEYS[1]
if redis.call('EXISTS', C) == 1 then return {0, redis.call('HGETALL', C)} end
redis.call('HSET', C, 'id', ARGV[1], 'queue', ARGV[2], 'spec', ARGV[3], 'ref_ms', ARGV[4],
  'created_at', ARGV[5], 'status', 'scheduling', 'cursor', 0, 'cursor_id', '',
  'scheduled', 0, 'released', 0, 'processed', 0, 'failed', 0, 'cancelled', 0,
  'duplicates', 0, 'skipped', 0)
return {1}
