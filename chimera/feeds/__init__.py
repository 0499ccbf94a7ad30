"""S1 exchange connectors: market data and user data from Binance (or the local venue) to Redis."""
