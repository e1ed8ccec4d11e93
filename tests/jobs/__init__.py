"""Process-free tests of the jobs, their result objects and PoolCore, over an in-memory engine."""
