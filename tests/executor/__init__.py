"""RobustExecutor's behaviour tests, after CPython's ``test.test_concurrent_futures``."""
