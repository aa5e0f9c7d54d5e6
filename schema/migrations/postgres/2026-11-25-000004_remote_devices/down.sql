DROP TABLE remote_device_lists;
DROP TABLE remote_devices;
