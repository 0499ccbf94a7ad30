"""Risk ports shared by S3, S5, S6 and the gateway: budget and concurrency reservation, kill switch,
health and regime, each with a Redis implementation (Lua, one hash slot) and an in-memory one."""
