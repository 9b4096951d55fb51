"""Time: recurring schedules in a time zone (with DST policies), local-time sends, bulk
campaigns due at each recipient's local time."""
