"""The notifier: ``Notify`` on ``notify:{outbox}`` → Telegram or a Standard Webhooks endpoint."""
