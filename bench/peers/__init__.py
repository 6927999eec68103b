"""Other Python Raft libraries measured the way ``bench/tcp.py`` measures openraft-py."""
