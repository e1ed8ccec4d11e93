"""The thread engine: chunks run by threads of the owner, objects passed by reference."""
