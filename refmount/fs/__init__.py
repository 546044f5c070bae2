"""The FUSE daemon: namespace (inodes), request handlers, and the mount lifecycle."""
