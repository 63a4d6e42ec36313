// The wallet's words in English, Traditional Chinese and Simplified Chinese. Amounts are whole
// points, always with their unit, so no line reads as money (REQUIREMENTS P-32).
export const LANGS = { en: 'English', 'zh-Hant': '繁體中文', 'zh-Hans': '简体中文' };

const M = {
  en: {
    title: 'Alliance wallet', lang: 'Language', wallet: 'Wallet', brands: 'My brands', lock: 'Lock',
    create: 'Create a wallet', createHelp: 'Your key is made in this browser and kept here, encrypted under your passphrase. It is never sent anywhere.',
    passphrase: 'Wallet passphrase', again: 'Passphrase again', mismatch: 'The two passphrases differ.', short: 'Use at least 10 characters.',
    unlock: 'Unlock', wrong: 'Wrong passphrase.', imported: 'Wallet imported.', importFile: 'Import a keystore file (from the CLI)',
    export: 'Export keystore', phrase: 'Show recovery phrase', phraseHelp: 'These 24 words restore every address of the wallet. Anyone who has them has your points.',
    address: 'Wallet address', forget: 'Remove the wallet from this browser',
    addBrand: 'Add a brand', brandUrl: 'Brand gateway address', signUp: 'Sign up', logIn: 'Log in', phone: 'Phone', email: 'E-mail',
    name: 'Name', accountPass: 'Account passphrase (at this brand)', code: 'Code sent to your {kind}', verify: 'Confirm',
    balance: 'Points', ap: 'Alliance points in the linked wallet', tier: 'Tier', expiring: '{points} points expire on {date}',
    history: 'History', consents: 'Consents', link: 'Link this wallet', linked: 'Linked wallet: {address}', notLinked: 'No wallet linked here yet.',
    exchange: 'Exchange points for alliance points', exchangeHelp: 'At {rate} points per alliance point.', apAmount: 'Alliance points',
    redeem: 'Spend alliance points at another brand', redeemAt: 'Spend at', redeemHelp: 'Your alliance points become points at that brand.',
    rewards: 'Rewards', order: 'Order', orders: 'My orders and coupons', coupon: 'coupon {code}, show it at the till by {date}', notOrderable: 'Not available: {reason}', points: '{n} points', apUnit: '{n} alliance points',
    grant: 'Grant', withdraw: 'Withdraw', granted: 'granted', notGranted: 'not granted', receipt: 'Receipt', verifyReceipt: 'Check receipt',
    receiptOk: 'Receipt {seq}: signed by {brand}, valid.', receiptBad: 'Receipt {seq}: the signature does not verify.', download: 'Download',
    exportData: 'Download my data', erase: 'Erase my data at this brand', eraseConfirm: 'Erase? Your name and contact details at {brand} are destroyed for good; the points history stays without them.',
    erased: 'Your data at {brand} is erased.', done: 'Done.', status: 'Status: {status}', open: 'Open', back: 'Back to my brands',
    k_earn: 'Earned at a purchase', k_welcome: 'Welcome points', k_action: 'Earned for an action', k_exchange: 'Exchanged for alliance points', k_exchange_reversal: 'Exchange undone', k_reward_cancel: 'Reward cancelled',
    k_alliance_redeem: 'From alliance points', k_burn: 'Paid at a purchase', k_expire: 'Expired', k_clawback: 'Taken back (refund)',
    k_burn_return: 'Returned (refund)', k_reward: 'Spent on a reward', k_gift_out: 'Given', k_gift_in: 'Received', k_donation: 'Donated',
    purpose_loyalty_core: 'Running the programme', purpose_alliance_exchange: 'Exchanging across the alliance',
    purpose_federated_training: 'Model training with other brands (no data leaves)', purpose_marketing: 'Offers and marketing',
    purpose_overlap_analytics: 'Counting members shared with other brands',
    error: 'Refused: {detail}', offline: 'The gateway cannot be reached. Try again; nothing was done twice.',
  },
  'zh-Hant': {
    title: '聯盟錢包', lang: '語言', wallet: '錢包', brands: '我的品牌', lock: '鎖定',
    create: '建立錢包', createHelp: '您的金鑰在此瀏覽器中產生並保存於此，以您的密碼加密，絕不會傳送到任何地方。',
    passphrase: '錢包密碼', again: '再次輸入密碼', mismatch: '兩次輸入的密碼不一致。', short: '請至少使用 10 個字元。',
    unlock: '解鎖', wrong: '密碼錯誤。', imported: '已匯入錢包。', importFile: '匯入金鑰檔（來自命令列工具）',
    export: '匯出金鑰檔', phrase: '顯示復原詞', phraseHelp: '這 24 個英文單字可復原錢包的所有地址。持有它們的人即可動用您的點數。',
    address: '錢包地址', forget: '從此瀏覽器移除錢包',
    addBrand: '新增品牌', brandUrl: '品牌閘道位址', signUp: '註冊', logIn: '登入', phone: '電話', email: '電子郵件',
    name: '姓名', accountPass: '帳戶密碼（此品牌）', code: '傳送至您{kind}的驗證碼', verify: '確認',
    balance: '點數', ap: '已連結錢包中的聯盟點數', tier: '等級', expiring: '{points} 點將於 {date} 到期',
    history: '紀錄', consents: '同意事項', link: '連結此錢包', linked: '已連結錢包：{address}', notLinked: '此品牌尚未連結錢包。',
    exchange: '將點數兌換為聯盟點數', exchangeHelp: '每 1 聯盟點數需 {rate} 點。', apAmount: '聯盟點數',
    redeem: '在其他品牌使用聯盟點數', redeemAt: '使用於', redeemHelp: '您的聯盟點數將轉為該品牌的點數。',
    rewards: '獎勵', order: '兌換', orders: '我的訂單與優惠券', coupon: '優惠券 {code}，請於 {date} 前在櫃檯出示', notOrderable: '無法兌換：{reason}', points: '{n} 點', apUnit: '{n} 聯盟點數',
    grant: '同意', withdraw: '撤回', granted: '已同意', notGranted: '未同意', receipt: '收據', verifyReceipt: '驗證收據',
    receiptOk: '收據 {seq}：由 {brand} 簽署，有效。', receiptBad: '收據 {seq}：簽章驗證失敗。', download: '下載',
    exportData: '下載我的資料', erase: '刪除我在此品牌的資料', eraseConfirm: '確定刪除？您在 {brand} 的姓名與聯絡資料將永久銷毀；點數紀錄會保留但不再含這些資料。',
    erased: '您在 {brand} 的資料已刪除。', done: '完成。', status: '狀態：{status}', open: '開啟', back: '返回我的品牌',
    k_earn: '消費累積', k_welcome: '迎新點數', k_action: '活動累積', k_exchange: '兌換為聯盟點數', k_exchange_reversal: '兌換已撤銷', k_reward_cancel: '獎勵已取消',
    k_alliance_redeem: '由聯盟點數轉入', k_burn: '消費折抵', k_expire: '到期', k_clawback: '退款扣回',
    k_burn_return: '退款返還', k_reward: '兌換獎勵', k_gift_out: '贈出', k_gift_in: '收到', k_donation: '捐贈',
    purpose_loyalty_core: '經營會員計畫', purpose_alliance_exchange: '聯盟內兌換',
    purpose_federated_training: '與其他品牌共同訓練模型（資料不外流）', purpose_marketing: '優惠與行銷',
    purpose_overlap_analytics: '計算與其他品牌共同的會員數',
    error: '遭拒：{detail}', offline: '無法連線至閘道。請再試一次；不會重複執行。',
  },
  'zh-Hans': {
    title: '联盟钱包', lang: '语言', wallet: '钱包', brands: '我的品牌', lock: '锁定',
    create: '创建钱包', createHelp: '您的密钥在此浏览器中生成并保存在这里，用您的密码加密，绝不会发送到任何地方。',
    passphrase: '钱包密码', again: '再次输入密码', mismatch: '两次输入的密码不一致。', short: '请至少使用 10 个字符。',
    unlock: '解锁', wrong: '密码错误。', imported: '已导入钱包。', importFile: '导入密钥文件（来自命令行工具）',
    export: '导出密钥文件', phrase: '显示助记词', phraseHelp: '这 24 个英文单词可恢复钱包的所有地址。持有它们的人即可动用您的积分。',
    address: '钱包地址', forget: '从此浏览器移除钱包',
    addBrand: '添加品牌', brandUrl: '品牌网关地址', signUp: '注册', logIn: '登录', phone: '手机', email: '电子邮箱',
    name: '姓名', accountPass: '账户密码（此品牌）', code: '发送到您{kind}的验证码', verify: '确认',
    balance: '积分', ap: '已关联钱包中的联盟积分', tier: '等级', expiring: '{points} 积分将于 {date} 过期',
    history: '记录', consents: '同意事项', link: '关联此钱包', linked: '已关联钱包：{address}', notLinked: '此品牌尚未关联钱包。',
    exchange: '将积分兑换为联盟积分', exchangeHelp: '每 1 联盟积分需 {rate} 积分。', apAmount: '联盟积分',
    redeem: '在其他品牌使用联盟积分', redeemAt: '使用于', redeemHelp: '您的联盟积分将转为该品牌的积分。',
    rewards: '奖励', order: '兑换', orders: '我的订单和优惠券', coupon: '优惠券 {code}，请于 {date} 前在收银台出示', notOrderable: '无法兑换：{reason}', points: '{n} 积分', apUnit: '{n} 联盟积分',
    grant: '同意', withdraw: '撤回', granted: '已同意', notGranted: '未同意', receipt: '回执', verifyReceipt: '验证回执',
    receiptOk: '回执 {seq}：由 {brand} 签署，有效。', receiptBad: '回执 {seq}：签名验证失败。', download: '下载',
    exportData: '下载我的数据', erase: '删除我在此品牌的数据', eraseConfirm: '确定删除？您在 {brand} 的姓名和联系方式将被永久销毁；积分记录会保留但不再包含这些数据。',
    erased: '您在 {brand} 的数据已删除。', done: '完成。', status: '状态：{status}', open: '打开', back: '返回我的品牌',
    k_earn: '消费获得', k_welcome: '新会员积分', k_action: '活动获得', k_exchange: '兑换为联盟积分', k_exchange_reversal: '兑换已撤销', k_reward_cancel: '奖励已取消',
    k_alliance_redeem: '由联盟积分转入', k_burn: '消费抵扣', k_expire: '过期', k_clawback: '退款扣回',
    k_burn_return: '退款返还', k_reward: '兑换奖励', k_gift_out: '赠出', k_gift_in: '收到', k_donation: '捐赠',
    purpose_loyalty_core: '运营会员计划', purpose_alliance_exchange: '联盟内兑换',
    purpose_federated_training: '与其他品牌共同训练模型（数据不出品牌）', purpose_marketing: '优惠与营销',
    purpose_overlap_analytics: '统计与其他品牌共同的会员数',
    error: '被拒绝：{detail}', offline: '无法连接网关。请重试；不会重复执行。',
  },
};

export function pick(wanted) {
  if (M[wanted]) return wanted;
  const l = (wanted || '').toLowerCase();
  if (l.startsWith('zh')) return /hant|tw|hk|mo/.test(l) ? 'zh-Hant' : 'zh-Hans';
  return 'en';
}

export function translator(lang) {
  const table = M[lang] || M.en;
  return (key, vars = {}) => (table[key] ?? M.en[key] ?? key).replace(/\{(\w+)\}/g, (_, v) => String(vars[v] ?? ''));
}

export const KEYS = Object.keys(M.en);
export const MESSAGES = M;
