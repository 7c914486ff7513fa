-- One database per service (a service never reads another service's tables).
-- Run once by the postgres image's entrypoint, as POSTGRES_USER, when the data volume is empty;
-- the databases are owned by that user. The services create their tables by migrating on start.
CREATE DATABASE registry;
CREATE DATABASE cordees;
CREATE DATABASE stages3e;
CREATE DATABASE funding;
CREATE DATABASE notifications;
