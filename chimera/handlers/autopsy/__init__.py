"""S8 trade autopsy: what a closed (or stagnating) trade did, what it cost, what else it could have done."""
