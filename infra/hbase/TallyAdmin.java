// Creates Tally's HBase tables through the Java Admin API, because the Thrift v1 API that
// happybase speaks cannot pass split keys. Run as a single-file program on HBase's classpath:
//
//   java -cp "<conf dir>:<hbase jars>/*" infra/hbase/TallyAdmin.java \
//        <table> <salt buckets or 1> <family>:<ttl seconds or 0> [<family>:<ttl> ...]
//
// With N salt buckets the table is pre-split at the one-byte keys 0x01 .. N-1, so that every
// salt value owns exactly one region. An existing table is left alone (its region count and
// families are printed), which keeps `tally stack up` idempotent.
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HConstants;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;
import org.apache.hadoop.hbase.io.compress.Compression;
import org.apache.hadoop.hbase.io.encoding.DataBlockEncoding;
import org.apache.hadoop.hbase.regionserver.BloomType;
import org.apache.hadoop.hbase.util.Bytes;

public class TallyAdmin {
  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      System.err.println("usage: TallyAdmin <table> <salt buckets> <family>:<ttl seconds>...");
      System.exit(2);
    }
    TableName name = TableName.valueOf(args[0]);
    int buckets = Integer.parseInt(args[1]);
    Configuration conf = HBaseConfiguration.create();
    try (Connection conn = ConnectionFactory.createConnection(conf);
         Admin admin = conn.getAdmin()) {
      if (admin.tableExists(name)) {
        System.out.println("exists " + name + " regions=" + admin.getRegions(name).size());
        return;
      }
      TableDescriptorBuilder table = TableDescriptorBuilder.newBuilder(name);
      for (int i = 2; i < args.length; i++) {
        String[] fam = args[i].split(":", 2);
        int ttl = Integer.parseInt(fam[1]);
        table.setColumnFamily(ColumnFamilyDescriptorBuilder.newBuilder(Bytes.toBytes(fam[0]))
            .setMaxVersions(1)
            .setTimeToLive(ttl > 0 ? ttl : HConstants.FOREVER)
            .setBloomFilterType(BloomType.ROW)
            .setDataBlockEncoding(DataBlockEncoding.FAST_DIFF)
            .setCompressionType(Compression.Algorithm.NONE)
            .build());
      }
      List<byte[]> splits = new ArrayList<>();
      for (int s = 1; s < buckets; s++) {
        splits.add(new byte[] {(byte) s});
      }
      if (splits.isEmpty()) {
        admin.createTable(table.build());
      } else {
        admin.createTable(table.build(), splits.toArray(new byte[0][]));
      }
      System.out.println("created " + name + " regions=" + admin.getRegions(name).size());
    }
  }
}
