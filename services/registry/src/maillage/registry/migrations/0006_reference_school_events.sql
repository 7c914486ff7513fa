-- Reference schools are published on registry.schools (fr.maillage.registry.school.referenced.v1)
-- when an import adds one or changes what is published of it. `version` counts those changes;
-- 0 is a school imported before publishing existed: the next import publishes it.
ALTER TABLE reference_schools ADD COLUMN version integer NOT NULL DEFAULT 0 CHECK (version >= 0);
