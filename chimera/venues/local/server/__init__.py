"""aiohttp protocol layer (Binance REST + WebSocket) over the pure engine."""
