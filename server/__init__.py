"""The application shell: database, services, web app, worker and command line around the pure engine."""
