from functools import cache

import bcrypt


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, password_hash: str | None, rounds: int) -> bool:
    """Check a password; with no hash (unknown user) spend the same time on a dummy one."""
    candidate = password.encode()
    if password_hash is None:
        bcrypt.checkpw(candidate, _dummy_hash(rounds))
        return False
    return bcrypt.checkpw(candidate, password_hash.encode())


@cache
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(b"dummy password for unknown users", bcrypt.gensalt(rounds))
