"""Process-free tests of the process engine's pure parts: attribution and scheduling."""
