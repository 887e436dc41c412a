-- The columns a batch stages (login_etl.record.staged).
COPY login_etl_staging ({staged}) FROM STDIN (FORMAT BINARY)
