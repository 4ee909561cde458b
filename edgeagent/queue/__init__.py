"""The persistent queue: LMDB storage, leases, dead letters."""
