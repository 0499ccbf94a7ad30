"""Local Binance venue: a loopback server speaking Binance REST/WS over a pure matching engine."""
