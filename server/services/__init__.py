"""Use cases of the application, called by the web app, the worker and the CLI alike.

Services take what they need as arguments (a database session, compiled policies, a folder)
and never commit: the request, the job or the command that calls them owns the transaction.
"""
