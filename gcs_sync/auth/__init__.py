"""Who may do what, and the start-up check of what the settings name:

    htpasswd         the check of a login against an htpasswd file; check_htpasswd
    user_names       the rules for user names (logins, and the users commands)
    password_object  PASSWORD_FILE written as gs:// or s3:// URL: the object it names
    password_file    that object's local copy, which follows it
    stores           the htpasswd file as the users commands edit it, local or in the bucket
    startup          check_startup: the folders, PASSWORD_FILE and WELCOME, at every start

May import: ``gcs_sync.sync`` (the state's failure records, the folder), ``gcs_sync.drivers``
and the top-level modules. Never ``web``, ``ops`` or ``cli``.
"""
