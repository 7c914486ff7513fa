-- QPV proximity of schools, from the éducation prioritaire list ("QP à proximité O/N" and the
-- code of that quartier prioritaire), copied to school partners like their REP status.
ALTER TABLE reference_schools
    ADD COLUMN qpv_proximity boolean,
    ADD COLUMN qpv_code text CHECK (qpv_code ~ '^(QP[0-9]{6}|QN[0-9AB]{2,3}[0-9]{2}[A-Z])$');
ALTER TABLE partners
    ADD COLUMN qpv_proximity boolean,
    ADD COLUMN qpv_code text;
