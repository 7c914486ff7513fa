"""maillage.notifications.

Notifications: every event a partner cares about, pushed by signed webhook and by e-mail.
"""
