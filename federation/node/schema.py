"""The node's common data model in `node.duckdb` (DESIGN §5).

Images live in the same file (`image.pixels`, raw bytes of a C-ordered array) so
that a backup of one file holds everything, and `imaging_study.image_ref` points at
them. Clinical variables are stored long (one row per subject and variable) because
every hospital's table has different columns; `clinical_frame` pivots them back.

Migrations only ever add (other parts of the node read these tables): version 2
adds `image.frames` (multi-frame DICOM), `clinical_variable` (each clinical
variable's type and column order, for descriptors and `clinical_frame`) and
`ingestion` (one row per committed ingestion batch); version 3 adds what the
training pixel pipeline (`federation.training.pixels`) needs to read a DICOM
instance's stored values: `image.photometric` (PhotometricInterpretation of the
stored pixels), `rescale_slope` / `rescale_intercept` (modality LUT, e.g. to
Hounsfield units), `window_center` / `window_width` (the first VOI window the file
gives) and `transfer_syntax` (which encoding the pixels were decoded from). They are
NULL for non-DICOM images and for rows stored before version 3.

Pixel layout: `image.pixels` holds `frames × height × width × channels` values of
numpy dtype `image.dtype` (a name such as 'uint8' or 'int16'), little-endian,
C order; `frames` is 1 (or NULL in rows written before version 2) for 2-D images.
"""

from __future__ import annotations

from tre.core.db import Migration

COMPONENT = "node_cdm"

MIGRATIONS: list[Migration] = [
    (
        1,
        """
        CREATE TABLE dataset (
            dataset_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL CHECK (kind IN ('imaging', 'clinical')),
            title VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            consent_regime VARCHAR NOT NULL DEFAULT 'opt-out'
                CHECK (consent_regime IN ('opt-in', 'opt-out')),
            label_names VARCHAR NOT NULL DEFAULT '{}',
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE person (
            pseudonym VARCHAR PRIMARY KEY,
            sex VARCHAR,
            birth_year INTEGER
        );
        CREATE TABLE image (
            image_ref VARCHAR PRIMARY KEY,
            height INTEGER NOT NULL,
            width INTEGER NOT NULL,
            channels INTEGER NOT NULL,
            dtype VARCHAR NOT NULL,
            pixels BLOB NOT NULL
        );
        CREATE TABLE imaging_study (
            study_id VARCHAR PRIMARY KEY,
            dataset_id VARCHAR NOT NULL REFERENCES dataset (dataset_id),
            pseudonym VARCHAR NOT NULL REFERENCES person (pseudonym),
            modality VARCHAR,
            body_site VARCHAR,
            study_date DATE,
            manufacturer VARCHAR,
            label INTEGER,
            split VARCHAR CHECK (split IN ('train', 'val', 'test')),
            image_ref VARCHAR REFERENCES image (image_ref)
        );
        CREATE TABLE clinical (
            dataset_id VARCHAR NOT NULL REFERENCES dataset (dataset_id),
            pseudonym VARCHAR NOT NULL REFERENCES person (pseudonym),
            variable VARCHAR NOT NULL,
            value_num DOUBLE,
            value_text VARCHAR,
            PRIMARY KEY (dataset_id, pseudonym, variable)
        )
        """,
    ),
    (
        2,
        """
        ALTER TABLE image ADD COLUMN frames INTEGER DEFAULT 1;
        CREATE TABLE clinical_variable (
            dataset_id VARCHAR NOT NULL REFERENCES dataset (dataset_id),
            variable VARCHAR NOT NULL,
            kind VARCHAR NOT NULL CHECK (kind IN ('numeric', 'text')),
            position INTEGER NOT NULL,
            PRIMARY KEY (dataset_id, variable)
        );
        CREATE TABLE ingestion (
            batch_id VARCHAR PRIMARY KEY,
            dataset_id VARCHAR NOT NULL REFERENCES dataset (dataset_id),
            source_kind VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            params VARCHAR NOT NULL DEFAULT '{}',
            ingested INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            finished_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
    ),
    (
        3,
        """
        ALTER TABLE image ADD COLUMN photometric VARCHAR;
        ALTER TABLE image ADD COLUMN rescale_slope DOUBLE;
        ALTER TABLE image ADD COLUMN rescale_intercept DOUBLE;
        ALTER TABLE image ADD COLUMN window_center DOUBLE;
        ALTER TABLE image ADD COLUMN window_width DOUBLE;
        ALTER TABLE image ADD COLUMN transfer_syntax VARCHAR
        """,
    ),
]
