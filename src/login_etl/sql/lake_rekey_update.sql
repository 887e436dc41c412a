UPDATE login_etl_lake_outbox
SET masked_ip = %(masked_ip)s, masked_device_id = %(masked_device_id)s
WHERE id = %(key)s
