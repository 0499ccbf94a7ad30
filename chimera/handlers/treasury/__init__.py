"""S1 treasury: the consumer-group handler that moves funds between wallets (TransferRequest)."""
