"""The pure dispatch core: lifecycle table, timers, deadline book, journal records, engine.

Nothing here imports asyncio, aiohttp, sqlite3, redis or ``time``: every call takes ``now``
and returns the records the edges must store and publish.
"""
