"""Writing the report's files atomically through Hadoop's FileSystem, so `output.root` may be any URI the cluster
reads (a local folder, HDFS, s3a://, abfss://).

Each file is written whole under a hidden temporary name in the target folder, then renamed to its name: a reader
(or a failed run) never sees half a file. FileSystem.rename does not replace an existing file, so an existing one
is first moved aside and deleted only after the rename (and put back if the rename fails); on an object store,
where a rename is a copy, the file is briefly absent instead.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pyspark.sql import SparkSession

from custseg.core.errors import StageError

log = logging.getLogger(__name__)


class Folder:
    """One folder of a Hadoop FileSystem, through the JVM gateway."""

    def __init__(self, spark: SparkSession, folder: str) -> None:
        jvm: Any = spark._jvm
        self._path = jvm.org.apache.hadoop.fs.Path
        conf = spark._jsc.hadoopConfiguration()
        self.folder = self._path(folder)
        fs = self.folder.getFileSystem(conf)
        # the local file system writes a .crc file beside each file: the raw one beneath it writes the file only
        checksummed = jvm.java.lang.Class.forName("org.apache.hadoop.fs.ChecksumFileSystem")
        self.fs = fs.getRawFileSystem() if checksummed.isInstance(fs) else fs

    def uri(self, name: str) -> str:
        """The file's fully qualified location."""
        return str(self.fs.makeQualified(self._path(self.folder, name)).toString())

    def write(self, name: str, data: bytes) -> str:
        """Write `data` to `name` in the folder atomically; returns the file's location."""
        self.fs.mkdirs(self.folder)
        target = self._path(self.folder, name)
        tmp = self._path(self.folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            out = self.fs.create(tmp, False)
            try:
                out.write(bytearray(data))
            finally:
                out.close()
            self._publish(tmp, target)
        except BaseException:
            try:
                if self.fs.exists(tmp):
                    self.fs.delete(tmp, False)
            except Exception:  # the original failure matters more
                log.warning("report: could not remove the temporary file %s", tmp.toString(), exc_info=True)
            raise
        return self.uri(name)

    def _publish(self, tmp: Any, target: Any) -> None:
        old = None
        if self.fs.exists(target):
            old = self._path(self.folder, f".{target.getName()}.old-{uuid.uuid4().hex[:12]}")
            if not self.fs.rename(target, old):
                raise StageError(f"report: could not move the existing {target.toString()} aside to replace it")
        if not self.fs.rename(tmp, target):
            if old is not None and not self.fs.exists(target):
                self.fs.rename(old, target)
            raise StageError(f"report: could not rename the written file to {target.toString()}")
        if old is not None:
            self.fs.delete(old, False)
