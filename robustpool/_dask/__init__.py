"""The Dask engine: robustpool's pools on a Dask cluster (``robustpool.dask`` is its face).

``_owner`` is the pool's engine in the owner's process; ``_node`` is what runs on each Dask
worker. Imported only through ``robustpool.dask``: nothing else of robustpool imports Dask.
"""
