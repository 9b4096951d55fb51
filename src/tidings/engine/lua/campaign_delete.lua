-- campaign_delete: remove a finished or cancelled campaign's keys.
-- KEYS[1]: campaign hash; KEYS[2]: pending zset; KEYS[3]: throttle slots hash;
-- KEYS[4]: held zset. (The caller sweeps first, so a finished campaign's pending zset is
-- empty; the registry entry, in another slot, is removed by the caller afterwards.)
-- Returns 1 when deleted; -1 for an unknown campaign; 0 when it still has messages waiting
-- for release or held by a pause, or is still scheduling.
-- @flags allow-oom
local CAMPAIGN, PENDING, SLOTS, HELD = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', CAMPAIGN) == 0 then return -1 end
local status = redis.call('HGET', CAMPAIGN, 'status')
if status == 'scheduling' then return 0 end
if redis.call('ZCARD', PENDING) > 0 or redis.call('ZCARD', HELD) > 0 then return 0 end
redis.call('DEL', CAMPAIGN, PENDING, SLOTS, HELD)
return 1
