# transformers' common model tests, pinned copies (see each file's header) plus the two modules
# they import that the source distribution does not ship (exporters/, generation/: our own).
