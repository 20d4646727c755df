import secrets


def run() -> int:
    """32 bytes from the OS CSPRNG as 64 lower-case hex characters (upstream's format)."""
    print(secrets.token_bytes(32).hex())
    return 0
