"""The int8 device path: step and head models (``step``), conversion (``convert``, ``lut``,
``flatbuf``), the device loop (``loop``), runtimes and arena (``runtime``, ``arena``), release files
(``release``), firmware sources (``firmware``) and the console's host twin (``console``)."""
